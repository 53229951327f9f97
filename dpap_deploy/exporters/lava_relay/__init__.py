"""A graded relay process for Lava (its own package: Lava's compiler looks for process models
by importing every module next to the process's file)."""
