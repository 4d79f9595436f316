"""The pieces of ``bench/gpu_check.py``: settings, the SD3 measurements, the rewards, the report.

``settings`` says what is measured (the paper setting on a GPU, or tiny sizes on a CPU);
``timing`` holds the timing, memory and FLOP helpers and the matmul peak; ``sd3`` measures
rollouts, the LoRA update and the transformer's TFLOP/s through the trainer's own functions;
``fast`` measures diffusers' own pipeline and the trainer's fast paths; ``rewards`` (with
``serve``) measures the reward models in-process and through a Ray Serve deployment;
``report`` derives the epoch estimate and prints the table; ``goals`` gives each goal of issue
"GPU throughput" its verdict.
"""
