"""The reference CNN on a CUDA device against the CPU, on Fashion-MNIST: the same run step
for step, and the same accuracy after a short epoch. On a GPU, or on the CUDA emulator in
CI (make test-cuda-emu), where these are the end-to-end check of the whole CUDA backend."""
import numpy as np
import pytest

import gpuaccel as ga

STEPS, BATCH = 20, 128


def reference(device, seed=0):
    return ga.models.reference_cnn(seed=seed).compile(optimizer=ga.optimizers.Adam(1e-3), device=device)


def test_reference_cnn_20_steps_follow_the_cpu(cuda_device, fashion):
    """Twenty Adam steps at batch 128, one C call each: every step's loss and correct count
    on the device against the CPU's, and the weights after them."""
    (x, y), _ = fashion
    runs = {}
    for device in ("cpu", cuda_device):
        model = reference(device)
        steps = [model._net.train_step(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH].astype(np.int32))
                 for i in range(STEPS)]
        runs[device] = (np.array([s[0] for s in steps]), np.array([s[1] for s in steps]), model.get_weights())
    (cpu_loss, cpu_right, cpu_w), (dev_loss, dev_right, dev_w) = runs["cpu"], runs[cuda_device]
    rel = np.abs(dev_loss - cpu_loss) / np.abs(cpu_loss)
    print("per-step loss, relative difference to the CPU:", " ".join(f"{r:.1e}" for r in rel))
    assert rel.max() <= 1e-4, f"step {int(rel.argmax()) + 1}: {dev_loss[rel.argmax()]} vs {cpu_loss[rel.argmax()]}"
    assert cpu_loss[-1] < 0.7 * cpu_loss[0], "the run did not learn: the comparison would say little"
    assert np.abs(dev_right - cpu_right).max() <= 1  # a near-tie logit may flip one image
    for i, (a, b) in enumerate(zip(dev_w, cpu_w)):
        # atol: a tenth of one Adam step (lr 1e-3): a weight whose gradient is near zero moves
        # by about lr either way, so fp32 rounding differences show there first
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=f"weight array {i}")


def test_reference_cnn_short_epoch_accuracy_matches_the_cpu(cuda_device, fashion):
    """One epoch on 2,000 training images (16 steps, shuffled, through fit): test accuracy
    on 2,000 test images within 0.5 points of the CPU's."""
    (x, y), (xt, yt) = fashion
    acc = {}
    for device in ("cpu", cuda_device):
        model = reference(device)
        model.fit(x[:2000], y[:2000], epochs=1, batch_size=BATCH, verbose=0, seed=0)
        acc[device] = model.evaluate(xt[:2000], yt[:2000])[1]
    print(f"accuracy after one 2,000-image epoch: cpu {acc['cpu']:.4f}, {cuda_device} {acc[cuda_device]:.4f}")
    assert acc["cpu"] > 0.5, "the run did not learn: the comparison would say little"
    assert abs(acc[cuda_device] - acc["cpu"]) <= 0.005
