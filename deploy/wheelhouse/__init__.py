"""``make wheelhouse``: one archive with what an air-gapped GPU image lacks to run the GPU check.

The project's runtime requirements are resolved for the target Python and platform, the
packages the image already has at an acceptable version (its ``pip freeze``) are taken out,
and the rest is packed: an unpacked site tree (Ray's jars and RLlib stripped) compressed with
xz, or the wheels. ``bash bench/gpu_check.sh --bundle FILE`` unpacks it and runs the check
with it in front on ``PYTHONPATH``. See docs/deployment.md, "Air-gapped GPU nodes".
"""
