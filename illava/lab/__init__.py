"""The lab: the benchmark, the accuracy harness and its synthetic scenes, the demo and the soak test.

These measure and show the core library; the core never imports them.
"""
