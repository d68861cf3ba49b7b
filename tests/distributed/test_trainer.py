"""The Trainer under mpiexec -n 2: auto-detected data parallel, the updates of one process
taking the whole global batch, one progress display, one checkpoint writer."""

import importlib.util

import numpy as np

import fastgrad


def test_trainer_under_mpiexec_matches_one_process(mpirun, workers):
    proc = mpirun("trainer")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = np.load(mpirun.out / "trainer.npz")
    assert d["w0"].tobytes() == d["w1"].tobytes()
    # only rank 0 printed its epoch line and wrote the checkpoint
    assert proc.stdout.count("epoch 1/1:") == 1, proc.stdout
    if importlib.util.find_spec("safetensors") is not None:
        assert (mpirun.out / "ck-rank0.safetensors").exists()
        assert not (mpirun.out / "ck-rank1.safetensors").exists()
    # oracle: the same Trainer in one process (this one), no distribution
    fastgrad.set_num_threads(1)
    net, _, history = workers.run_trainer({"distributed": False}, str(mpirun.out / "single.safetensors"))
    record = history.epochs[-1]
    assert int(d["updates"]) == record["updates"] == 8
    np.testing.assert_allclose(d["w0"], workers.flat_weights(net), rtol=1e-5, atol=1e-6)
    # per-step losses are of the whole global batch (summed over ranks), as in one process
    np.testing.assert_allclose(d["losses"], history.step_loss, rtol=1e-5)
    np.testing.assert_allclose(float(d["accuracy"]), record["accuracy"])
    np.testing.assert_allclose(float(d["val_loss"]), record["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(float(d["val_accuracy"]), record["val_accuracy"])
