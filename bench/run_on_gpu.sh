#!/usr/bin/env bash
# Run the benchmarks on a lent GPU machine (no network there). Wheels of the pinned versions and the
# prebuilt Qwen2 tokenizer travel in .whl/ (see bench/README.md); results land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
[ -d .whl/cache ] && export VLM2GEOVEC_CACHE="$PWD/.whl/cache"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, sentence_transformers as s; print(torch.__version__, transformers.__version__, s.__version__)"
WHAT="${WHAT:-encode train}"  # issue 14's figures in one call: WHAT=mfu bash bench/run_on_gpu.sh
if [[ " $WHAT " == *" encode "* ]]; then
python3 bench/encode.py --model qwen2vl-2b-random --device cuda --n "${N:-512}" --batch-size "${BS:-32}" \
  --process-workers "${PROCS:-8}" --json "$OUT/encode_qwen2vl-2b-random.json" --results-md "$OUT/RESULTS.md" > "$OUT/encode_2b.log" 2>&1
echo "2b exit $?"; tail -5 "$OUT/encode_2b.log"
python3 bench/encode.py --model nano --device cuda --n "${N:-512}" --batch-size "${BS:-32}" \
  --json "$OUT/encode_nano.json" --results-md "$OUT/RESULTS.md" > "$OUT/encode_nano.log" 2>&1
echo "nano exit $?"
fi
if [[ " $WHAT " == *" mfu "* ]]; then  # issue 14: MFU at 2B shape, end to end vs model only, packed vs padded
# One 2B run (bf16, SDPA; the packed forward runs SDPA item by item) gives model FLOPs, TFLOP/s and MFU for the padded
# and packed forwards in both batching orders, the language model's share of each, the packed/padded vector gap, and
# end to end (SentenceTransformer.encode with look-ahead threads, then processes) vs model-only time.
python3 bench/encode.py --model qwen2vl-2b-random --device cuda --n "${N:-512}" --batch-size "${BS:-32}" \
  --process-workers "${PROCS:-8}" --json "$OUT/encode_qwen2vl-2b-random_mfu_sdpa.json" --results-md "$OUT/RESULTS.md" \
  > "$OUT/encode_2b_mfu_sdpa.log" 2>&1
echo "2b mfu sdpa exit $?"; tail -5 "$OUT/encode_2b_mfu_sdpa.log"
# With flash-attention installed, the packed forward runs as one varlen call per layer (no per-item loop).
if python3 -c "import flash_attn" 2>/dev/null; then
python3 bench/encode.py --model qwen2vl-2b-random --device cuda --n "${N:-512}" --batch-size "${BS:-32}" \
  --attn-implementation flash_attention_2 --json "$OUT/encode_qwen2vl-2b-random_mfu_flash2.json" \
  --results-md "$OUT/RESULTS.md" > "$OUT/encode_2b_mfu_flash2.log" 2>&1
echo "2b mfu flash_attention_2 exit $?"; tail -5 "$OUT/encode_2b_mfu_flash2.log"
else
echo "flash_attn not installed: no flash-attention varlen run"
fi
fi
if [[ " $WHAT " == *" train "* ]]; then
python3 bench/train.py --model qwen2vl-2b-random --device cuda --json "$OUT/train_qwen2vl-2b-random.json" \
  --results-md "$OUT/RESULTS.md" > "$OUT/train_2b.log" 2>&1
echo "train exit $?"; grep "{'batch" "$OUT/train_2b.log"; tail -3 "$OUT/train_2b.log"
fi
if [[ " $WHAT " == *" vllm "* ]]; then  # issue 13: vLLM's vectors and throughput against encode (needs vllm there)
python3 -m vlm2geovec.cli nano --out "$OUT/nano-vllm-src" > /dev/null && \
python3 bench/vllm_parity.py --model "$OUT/nano-vllm-src" --n "${N:-512}" --json "$OUT/vllm_parity_nano.json" \
  > "$OUT/vllm.log" 2>&1
echo "vllm exit $?"; tail -5 "$OUT/vllm.log"
fi
if [[ " $WHAT " == *" search "* ]]; then  # CPU-bound: uses the machine's cores, not the GPU
# 10^5 x 1536 is recorded from the 2-core machine; an HNSW build at 10^6 x 1536 may not fit one 10-minute call,
# so IVF only unless SEARCH_KINDS says otherwise.
python3 bench/search.py --dim 1536 --sizes ${SEARCH_SIZES:-1000000} --data clustered --kinds ${SEARCH_KINDS:-ivf} \
  --json "$OUT/search_1536.json" --results-md "$OUT/RESULTS.md" > "$OUT/search.log" 2>&1
echo "search exit $?"
fi
cat "$OUT/RESULTS.md"
