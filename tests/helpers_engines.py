"""A strategy for the engine tests, registered at run time (never shipped): it holds a cell still at a known point,
so that a test can take the cell's node away while the cell runs there."""

import os
import time

from cl_bench.strategies.lora import LoRA


class PauseOnce(LoRA):
    """LoRA that, where CLBENCH_TEST_PAUSE names a file not there yet, creates it on reaching the audio stage (its
    first stage saved), writes its Ray node's id into it and waits there (up to `wait` seconds) for its node to be
    removed. Without the variable, or once the file exists, it is plain LoRA: its results are LoRA's."""

    wait = 300.0

    def learn(self, experience):
        marker = os.environ.get("CLBENCH_TEST_PAUSE")
        if marker and experience.name == "audio":
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return super().learn(experience)  # paused once already: this is the retry, or another cell
            import ray

            os.write(fd, ray.get_runtime_context().get_node_id().encode())
            os.close(fd)
            deadline = time.monotonic() + PauseOnce.wait
            while time.monotonic() < deadline:  # the node goes, and this process with it
                time.sleep(0.1)
        return super().learn(experience)
