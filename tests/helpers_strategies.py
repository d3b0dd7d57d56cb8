"""Strategies used by the tests, registered at run time (never shipped)."""

from cl_bench.strategies.full_ft import FullFineTuning


class Spy(FullFineTuning):
    """Full fine-tuning that records what the runner hands it."""

    seen: list = []

    def learn(self, experience):
        Spy.seen.append(experience)
        return super().learn(experience)


class CrashOnAudio(FullFineTuning):
    """Full fine-tuning that dies on the audio stage while `crash` is set (a simulated kill)."""

    crash = True
    resumed_with: list = []

    def resumed(self, experiences):
        CrashOnAudio.resumed_with = experiences

    def learn(self, experience):
        if experience.name == "audio" and CrashOnAudio.crash:
            raise RuntimeError("simulated crash")
        return super().learn(experience)
