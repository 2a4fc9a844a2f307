"""Training engine: config, schedules, checkpoints, distributed setup, the loop and its reports."""
