"""What a plug-in implements and receives: the Strategy base class and its records (Declaration, Memory,
Cost, RunContext), the training loop it may call, and the footprint helpers of the memory plan. Plug-ins
import these names from `cl_bench` itself (``from cl_bench import Strategy, train, Footprint``)."""
