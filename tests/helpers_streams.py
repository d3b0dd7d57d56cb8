"""Streams used by the tests, registered at run time (never shipped)."""

import dataclasses

from cl_bench import Stream


class SmallNumbers(Stream):
    """vision-audio's tasks with few items per split (32 train, 8 val, 16 test): for running every strategy on
    every model family in seconds."""

    name = "small-numbers"
    tasks = {"vision": "image", "audio": "audio"}
    sizes = {"train": 32, "val": 8, "test": 16}

    def build(self, cache_dir=None, progress=True):
        from cl_bench.task_streams.vision_audio import VisionAudio, VisionAudioConfig

        full = VisionAudio(VisionAudioConfig(train_speakers=6, val_speakers=2, test_speakers=1)).build(cache_dir,
                                                                                                     progress)

        def small(e):
            splits = {s: getattr(e, s) for s in self.sizes}
            return dataclasses.replace(e, probes={}, **{s: d.shuffle(seed=0).select(range(min(self.sizes[s], len(d))))
                                                       for s, d in splits.items()})

        return dataclasses.replace(full, name=self.name, base=small(full.base),
                                   experiences=tuple(small(e) for e in full.experiences))
