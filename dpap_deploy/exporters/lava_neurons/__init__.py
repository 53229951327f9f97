"""Our own Lava neuron population (its own package: Lava's compiler looks for process models by
importing, and executing standalone, every module next to the process's file). The process and
its floating-point model: ``process.py``; how a NIR graph's neurons become it:
``exporters/lava_groups.py``."""
