#!/usr/bin/env bash
# Run a short LeNet-5 training loop (compiled kernels) under valgrind memcheck and count
# invalid reads and writes. Uses the installed fastgrad (or the work tree's in-place build
# when run from the repository root with PYTHONPATH=.). Exit status non-zero on any.
set -euo pipefail
log=$(mktemp)
PYTHONMALLOC=malloc valgrind --tool=memcheck --error-limit=no --leak-check=no \
  --log-file="$log" python - <<'PY'
import numpy as np
import fastgrad
from fastgrad import nn, optim
from fastgrad.models import lenet5

fastgrad.manual_seed(0)
model = lenet5()
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
rng = np.random.default_rng(0)
x = fastgrad.from_numpy(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
y = fastgrad.from_numpy(rng.integers(0, 10, 8))
for step in range(5):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
print("loss after 5 steps:", loss.item(), "backend:", fastgrad.kernels.backend)
PY
invalid=$(grep -c -E "Invalid (read|write)" "$log" || true)
echo "valgrind memcheck: $invalid invalid reads/writes (log: $log)"
grep -E "ERROR SUMMARY" "$log" || true
[ "$invalid" -eq 0 ]
