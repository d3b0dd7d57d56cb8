"""`python -m cl_bench.cli`: the same as `clbench`."""

from cl_bench.cli import main

main(prog_name="clbench")
