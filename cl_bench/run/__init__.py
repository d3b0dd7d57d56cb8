"""One run: configuration, key, lock and resume state, the base model, evaluation, the memory plan, shared
fits and the contract checks of `clbench validate`."""
