"""Write tests/fixtures/tf_gpt2_tiny/, a tiny GPT-2 checkpoint saved by TensorFlow
itself with OpenAI's variable names, for gptc's TensorFlow-free reader.

Run once, with TensorFlow installed in a separate environment (it is never a
dependency of gptc or of its tests); the output is committed:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python tests/make_tf_fixture.py

The variables are those of OpenAI's GPT-2 checkpoints (``model/wte``,
``model/h0/attn/c_attn/w`` of shape [1, nx, nf], ..., ``model/ln_f/g``) for the
small hyperparameters below, saved the way OpenAI saved theirs: a TF1 graph
and ``tf.train.Saver``. Their values follow ``fixture_tensors`` in
tests/tf_fixture.py, which the tests recompute with NumPy alone.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tf_fixture import FIXTURE_DIR, HPARAMS, fixture_tensors  # noqa: E402


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()

    os.makedirs(FIXTURE_DIR, exist_ok=True)
    tensors = fixture_tensors()
    graph = tf1.Graph()
    with graph.as_default():
        variables = [tf1.get_variable(name, initializer=value, use_resource=False)
                     for name, value in tensors.items()]
        saver = tf1.train.Saver(var_list=variables)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, os.path.join(FIXTURE_DIR, "model.ckpt"), write_meta_graph=False,
                       write_state=True)
    # The checkpoint file names the prefix by its absolute path here; OpenAI's
    # names it relatively, as "model.ckpt".
    with open(os.path.join(FIXTURE_DIR, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt"\n'
                'all_model_checkpoint_paths: "model.ckpt"\n')
    with open(os.path.join(FIXTURE_DIR, "hparams.json"), "w") as f:
        json.dump(HPARAMS, f, indent=2)
        f.write("\n")

    # Read back with TensorFlow: every variable has the value the rule gives.
    reader = tf1.train.NewCheckpointReader(os.path.join(FIXTURE_DIR, "model.ckpt"))
    for name, value in tensors.items():
        assert (reader.get_tensor(name) == value).all(), name
    for name in sorted(os.listdir(FIXTURE_DIR)):
        print(f"{name}: {os.path.getsize(os.path.join(FIXTURE_DIR, name))} bytes")


if __name__ == "__main__":
    main()
