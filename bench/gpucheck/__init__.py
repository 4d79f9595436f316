"""The pieces of ``bench/gpu_check.py``: settings, the SD3 measurements, the rewards, the report.

``settings`` says what is measured (the paper setting on a GPU, or tiny sizes on a CPU);
``sd3`` measures the matmul peak, rollouts, the LoRA update and the transformer's TFLOP/s
through the trainer's own functions; ``rewards`` measures the reward models in-process and
through a Ray Serve deployment; ``report`` derives the epoch estimate and prints the table.
"""
