#!/bin/bash
# Short CPU measurement runs for docs/baselines.md (one at a time, 1 thread each).
set -u
cd "$(dirname "$0")/../.."  # the repository root
export OMP_WAIT_POLICY=PASSIVE
COMMON="train.num_threads=1 train.progress=false data.num_workers=0"
OUT=runs/baselines
python tools/run_grid.py configs/hemorica/cls_resnet18.yaml configs/hemorica/cls_mobilevit_xs.yaml --out $OUT/hemorica_ctich \
  --set data.root=../shared/data/ct_ich_physionet_jpg --set data.source=physionet --set data.image_size=128 \
  --set train.epochs=8 --set eval.select.k=3 --set eval.select.after_epoch=3 \
  --set train.num_threads=1 --set train.progress=false --set data.num_workers=0
python tools/run_grid.py configs/kaggle/cls_resnet18.yaml --folds 5 --out $OUT/kaggle \
  --set data.image_size=128 --set train.epochs=10 \
  --set train.num_threads=1 --set train.progress=false --set data.num_workers=0
python tools/run_grid.py configs/physionet/unet_patch.yaml --folds 5 --out $OUT/physionet_phantom \
  --set data.root=null --set data.phantom.patients=10 --set data.phantom.size=128 --set data.phantom.slices=16 \
  --set data.image_size=128 --set data.patches.size=64 --set data.patches.stride=32 \
  --set eval.sliding_window.size=64 --set eval.sliding_window.stride=32 --set train.epochs=12 --set train.lr=1.0e-3 \
  --set data.batch_size=16 --set train.eval_period=0 \
  --set train.num_threads=1 --set train.progress=false --set data.num_workers=0
python tools/run_grid.py configs/dtvit/vit_dual.yaml --out $OUT/dtvit_phantom \
  --set data.phantom.patients=12 --set data.phantom.size=128 --set data.phantom.slices=16 \
  --set data.image_size=128 --set data.extra.center_crop=112 --set train.epochs=20 --set data.batch_size=16 \
  --set train.eval_period=0 \
  --set train.num_threads=1 --set train.progress=false --set data.num_workers=0
echo ALL DONE

# --- second batch (measure2.sh) ---
# PhysioNet phantom folds again after the k-fold split fix, then the threshold reference row.
cd "$(dirname "$0")/../.."  # the repository root
export OMP_WAIT_POLICY=PASSIVE
while ! grep -q "ALL DONE" runs/baselines/measure.log; do sleep 5; done
python tools/run_grid.py configs/physionet/unet_patch.yaml --folds 5 --out runs/baselines/physionet_phantom \
  --set data.root=null --set data.phantom.patients=10 --set data.phantom.size=128 --set data.phantom.slices=16 \
  --set data.image_size=128 --set data.patches.size=64 --set data.patches.stride=32 \
  --set eval.sliding_window.size=64 --set eval.sliding_window.stride=32 --set train.epochs=10 --set train.lr=1.0e-3 \
  --set data.batch_size=16 --set train.eval_period=0 \
  --set train.num_threads=1 --set train.progress=false --set data.num_workers=0
python tools/threshold_baseline.py runs/baselines/physionet_phantom/unet_patch --folds 5
echo ALL DONE 2

# --- 30-epoch PhysioNet patch U-Net (docs/baselines.md, row "30 epochs") ---
python tools/run_grid.py configs/physionet/unet_patch.yaml --folds 5 --out runs/baselines/physionet_phantom30 \
  --set data.root=null --set data.phantom.patients=10 --set data.phantom.size=128 --set data.phantom.slices=16 \
  --set data.image_size=128 --set data.patches.size=64 --set data.patches.stride=32 \
  --set eval.sliding_window.size=64 --set eval.sliding_window.stride=32 --set train.epochs=30 --set train.lr=1.0e-3 \
  --set data.batch_size=16 --set train.eval_period=0 \
  --set train.num_threads=2 --set train.progress=false --set data.num_workers=0
