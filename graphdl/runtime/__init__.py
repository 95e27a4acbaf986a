"""Runtime: compiled programs, parameter initialisation, the trainer and checkpoints."""
