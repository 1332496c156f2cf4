"""hemo-mtl: multi-task learning for intracranial hemorrhage on head CT."""
from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("hemo_mtl/version.py").read_text(), version)

setup(
    name="hemo-mtl",
    version=version["__version__"],
    description="Convert, train and evaluate multi-task models for intracranial hemorrhage on head CT",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hemo_mtl", "hemo_mtl.*", "converters", "converters.*"]),
    install_requires=[
        # Lower bounds: the oldest release whose API the code uses. Upper bounds only where a newer
        # release is known to break it. constraints.txt pins the exact set the tests passed with.
        # torch/torchvision: the CUDA builds 2.14.1 / 0.29.1 are the newest tested pair.
        "torch>=2.2,<2.15",
        "torchvision>=0.17,<0.30",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "pyyaml>=6.0",
        "pillow>=10.0",
        "nibabel>=5.0",
        "pydicom>=2.4",
        "opencv-python-headless>=4.8",  # 5.x warps > 4 channels in chunks (differences ~1e-8)
        "albumentations>=2.0",  # 1.x lacks: Affine(fill=, fill_mask=), PadIfNeeded(fill=)
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "scikit-learn>=1.3",
        "scikit-image>=0.22",
        "timm>=1.0",
        "segmentation-models-pytorch>=0.3.3",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "tqdm>=4.66",
    ],
    extras_require={
        # the exporters' and DICOM-SEG's consumers read our outputs in the tests: CI installs them
        "dev": ["pytest>=7.4", "pytest-xdist>=3.5", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2",
                "highdicom>=0.22", "grad-cam>=1.5"],
        # ONNX export (torch.onnx dynamo exporter needs onnxscript) and the onnxruntime predict backend
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
        # DICOM-SEG output of tools/predict.py --dicom-seg
        "dicom": ["highdicom>=0.22"],
        # Grad-CAM saliency of tools/predict.py --saliency (pytorch_grad_cam)
        "explain": ["grad-cam>=1.5"],
        # ultralytics is AGPL-3.0: optional, imported lazily, never required by the core.
        "yolo": ["ultralytics>=8.3,<9"],  # its Segment head and v8SegmentationLoss are internal API
    },
    # the same functions tools/<name>.py runs from a checkout (tests/tools/test_console_scripts.py)
    entry_points={"console_scripts": [
        "hemo-mtl-train = hemo_mtl.cli.train:cli",
        "hemo-mtl-convert = hemo_mtl.cli.convert:cli",
        "hemo-mtl-predict = hemo_mtl.cli.predict:cli",
        "hemo-mtl-evaluate = hemo_mtl.cli.evaluate:cli",
        "hemo-mtl-export = hemo_mtl.cli.export:cli",
        "hemo-mtl-stats = hemo_mtl.cli.stats:cli",
        "hemo-mtl-phantom = hemo_mtl.cli.phantom:cli",
        "hemo-mtl-run-grid = hemo_mtl.cli.run_grid:cli",
        "hemo-mtl-benchmark = hemo_mtl.cli.benchmark:cli",
        "hemo-mtl-threshold-baseline = hemo_mtl.cli.threshold_baseline:cli",
        "hemo-mtl-cross-validate = hemo_mtl.cli.cross_validate:cli",
        "hemo-mtl-docs-tables = hemo_mtl.cli.docs_tables:cli",
    ]},
)
