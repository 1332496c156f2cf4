#!/bin/bash
# The short CPU runs behind the "ours" figures of docs/baselines.md, one at a time, in order.
set -eu
cd "$(dirname "$0")/../.."  # the repository root
export OMP_WAIT_POLICY=PASSIVE
OUT=runs/baselines
CTICH=${CTICH:?set CTICH to the CT-ICH JPG release folder (Patients_CT/, hemorrhage_diagnosis.csv)}
KAGGLE=${KAGGLE:?set KAGGLE to the Kaggle head_ct folder (head_ct/, labels.csv)}
RUNTIME="--set train.progress=false --set data.num_workers=0"

python tools/run_grid.py configs/hemorica/cls_resnet18.yaml configs/hemorica/cls_mobilevit_xs.yaml --out $OUT/hemorica_ctich \
  --set data.root=$CTICH --set data.source=physionet --set data.image_size=128 \
  --set train.epochs=8 --set eval.select.k=3 --set eval.select.after_epoch=3 --set train.num_threads=1 $RUNTIME
python tools/run_grid.py configs/kaggle/cls_resnet18.yaml --folds 5 --out $OUT/kaggle \
  --set data.root=$KAGGLE --set data.image_size=128 --set train.epochs=10 --set train.num_threads=1 $RUNTIME
python tools/run_grid.py configs/dtvit/vit_dual.yaml --out $OUT/dtvit_phantom \
  --set data.phantom.patients=12 --set data.phantom.size=128 --set data.phantom.slices=16 \
  --set data.image_size=128 --set data.extra.center_crop=112 --set train.epochs=20 --set data.batch_size=16 \
  --set train.eval_period=0 --set train.num_threads=1 $RUNTIME

# PhysioNet patch U-Net on a 10-patient phantom, 5 folds, windows scaled to 128 px; then the
# intensity-threshold reference row on the same held-out folds.
physionet_grid() {  # OUT_DIR EPOCHS THREADS
  python tools/run_grid.py configs/physionet/unet_patch.yaml --folds 5 --out "$1" \
    --set data.root=null --set data.phantom.patients=10 --set data.phantom.size=128 --set data.phantom.slices=16 \
    --set data.image_size=128 --set data.patches.size=64 --set data.patches.stride=32 \
    --set eval.sliding_window.size=64 --set eval.sliding_window.stride=32 --set train.epochs="$2" --set train.lr=1.0e-3 \
    --set data.batch_size=16 --set train.eval_period=0 --set train.num_threads="$3" $RUNTIME
}
physionet_grid $OUT/physionet_phantom 10 1
python tools/threshold_baseline.py $OUT/physionet_phantom/unet_patch --folds 5
physionet_grid $OUT/physionet_phantom30 30 2  # the "30 epochs" row
