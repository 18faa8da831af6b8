#!/usr/bin/env bash
# A CAREamics 0.3.5 environment for the Noise2Void peer (bench/n2v.py, bench.adapt --n2v), apart
# from the product's: careamics pins other versions than ours. It takes the product's pinned CPU
# torch; torchvision is left out (no wheel matches that torch, and N2V never calls it: bench/n2v.py
# stands in for the import), careamics itself goes in without its declared dependencies.
#   bash bench/n2v-env.sh DIR   ->   DIR/bin/python bench/n2v.py ...
set -euo pipefail
dir=${1:?usage: bash bench/n2v-env.sh DIR}
python3 -m venv "$dir"
"$dir/bin/pip" install -q torch==2.13.0 "numpy<=2.4.6" pillow "pydantic>=2.11,<=2.14.1" \
  "lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3" "torchmetrics<1.9" tifffile "pyyaml<=6.0.3" psutil "zarr>=3" \
  scikit-image matplotlib "bioimageio.core>=0.9,<=0.11.0"
"$dir/bin/pip" install -q --no-deps careamics==0.3.5 microssim==0.0.5
cd "$(dirname "$0")" && "$dir/bin/python" -c "import n2v; n2v.without_torchvision(); import careamics
print('careamics', careamics.__version__, 'in $dir')"
