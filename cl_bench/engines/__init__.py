"""Many runs: sweeps (one process or Ray) and hyperparameter tuning on validation data."""
