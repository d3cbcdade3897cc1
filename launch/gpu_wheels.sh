#!/usr/bin/env bash
# Download, here, the cp312 wheels the GPU machine lacks into .whl/ (git-ignored), for
# launch/gpu_bench.sh to install there (that machine reaches no package index). Its image has
# Python 3.12 with jax, flax, optax, orbax, tensorstore, scipy, matplotlib and tqdm; not these.
#
#   launch/gpu_wheels.sh          # then carry .whl to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
# Versions as in requirements.txt; their own dependencies that the image lacks are listed too
# (--no-deps: never replace the image's numpy, jax or protobuf).
python -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any --no-deps -d .whl \
    grain==0.2.18 array-record portpicker nibabel==5.4.2 ml-collections==1.1.0 \
    tensorboardX==2.6.5
ls -l .whl
