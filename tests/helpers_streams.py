"""Streams used by the tests, registered at run time (never shipped)."""

import dataclasses

from cl_bench import Stream


class SmallNumbers(Stream):
    """vision-audio's tasks with few items per split (32 train, 8 val, 16 test): for running every strategy on
    every model family in seconds."""

    name = "small-numbers"
    tasks = {"vision": "image", "audio": "audio"}
    mixed = {"image-plus-audio": "image+audio"}  # built by the full stream, cut down as the tasks are
    sizes = {"train": 32, "val": 8, "test": 16}
    full = "VisionAudio"  # the stream of cl_bench.task_streams.vision_audio whose tasks are cut down
    speakers = {"train_speakers": 6, "val_speakers": 2, "test_speakers": 1}

    def build(self, cache_dir=None, progress=True):
        from cl_bench.task_streams import vision_audio

        cls = getattr(vision_audio, self.full)
        full = cls(vision_audio.VisionAudioConfig(**self.speakers)).build(cache_dir, progress)

        def small(e):
            splits = {s: getattr(e, s) for s in self.sizes}
            # each probe (text's train-plain) cut to the test split's size
            probes = {k: p.select(range(min(self.sizes["test"], len(p)))) for k, p in e.probes.items()}
            return dataclasses.replace(e, probes=probes, **{s: d.shuffle(seed=0).select(range(min(self.sizes[s], len(d))))
                                                           for s, d in splits.items()})

        return dataclasses.replace(full, name=self.name, base=small(full.base),
                                   experiences=tuple(small(e) for e in full.experiences),
                                   mixed=tuple(dataclasses.replace(p, test=p.test.select(range(self.sizes["test"])))
                                               for p in full.mixed))


class SmallTwoTasks(SmallNumbers):
    """two-tasks-per-modality cut down as small-numbers: digits and spoken numbers, then stroke thickness (image)
    and the speaker's rate (audio), each modality's second task arriving later."""

    name = "small-two-tasks"
    tasks = {"vision": "image", "audio": "audio", "image-thickness": "image", "audio-rate": "audio"}
    full = "TwoTasksPerModality"
    # audio-rate keeps slow and fast speakers only: these counts leave some in every split
    speakers = {"train_speakers": 10, "val_speakers": 4, "test_speakers": 4}
