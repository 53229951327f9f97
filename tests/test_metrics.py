"""Ties and silence are not answers: predictions, accuracy, agreement and output activity, and
the places that use them (training's evaluation, the spike parity of every SNN target, ONNX)."""
import numpy as np
import torch
from torch import nn

from dpap_deploy.data import load_dataset
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.exporters._compare import spike_parity
from dpap_deploy.metrics import (SILENT_WARN_FRACTION, accuracy, agreement, argmax_accuracy,
                                 output_activity, predictions, silent_warning)
from dpap_deploy.training import evaluate, evaluate_outputs
from dpap_deploy.zoo import build_model

# two samples, T = 4, 3 classes: sample 0 spikes 2, 1, 0 times (class 0); sample 1 is silent
SPIKES = np.zeros((2, 4, 3))
SPIKES[0, 0, 0] = SPIKES[0, 1, 0] = SPIKES[0, 1, 1] = 1


def test_ties_and_silence_are_no_prediction():
    scores = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, 3.0], [1.0, 4.0, 2.0], [0.5, 0.0, 0.0]])
    assert predictions(scores).tolist() == [-1, -1, 1, 0]
    assert predictions(scores.numpy()).tolist() == [-1, -1, 1, 0]      # numpy too
    # argmax would have counted the silent sample (class 0) and the tie (class 0) as right
    assert accuracy(predictions(scores), torch.tensor([0, 0, 1, 0])) == 0.5


def test_neurobench_accuracy_gives_a_tie_to_the_lowest_class():
    """NeuroBench's ChooseMaxCount (argmax): the silent sample and the 3-3 tie are class 0."""
    scores = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, 3.0], [1.0, 4.0, 2.0], [0.5, 0.0, 0.0]])
    y = torch.tensor([0, 0, 1, 0])
    assert argmax_accuracy(scores, y) == 1.0 and accuracy(predictions(scores), y) == 0.5
    assert argmax_accuracy(scores, torch.tensor([1, 2, 1, 0])) == 0.5    # a tie's other class
    assert argmax_accuracy(scores[:0], y[:0]) == 0.0


def test_output_activity_by_hand():
    act = output_activity(SPIKES)
    assert act["firing_rate"] == 3 / 24          # 3 spikes over 2 samples x 4 steps x 3 neurons
    assert act["silent_fraction"] == 0.5 and act["tie_fraction"] == 0.5 and act["n_samples"] == 2
    rates = torch.tensor(SPIKES).mean(1)         # the same as [N, classes] rates
    assert output_activity(rates)["silent_fraction"] == 0.5
    assert silent_warning(act, "test set").startswith("test set: the output layer is silent")
    assert silent_warning({"silent_fraction": SILENT_WARN_FRACTION, "n_samples": 20}, "x") is None


def test_parity_silent_target_neither_agrees_nor_scores():
    y = np.array([0, 0])
    same = spike_parity(SPIKES, SPIKES.copy(), y)
    # the faithful copy agrees on both samples (also on the silent one: the same tie) but the
    # silent sample is wrong in both
    assert same["agreement"] == 1.0 and same["accuracy"] == same["accuracy_torch"] == 0.5
    silent = spike_parity(SPIKES, np.zeros_like(SPIKES), y)
    # argmax made a silent target "class 0": 100% agreement and 100% accuracy here
    assert silent["agreement"] == 0.5 and silent["accuracy"] == 0.0
    assert silent["output"]["silent_fraction"] == 1.0 and silent["output_torch"]["silent_fraction"] == 0.5
    assert agreement(np.array([[2, 2, 0]]), np.array([[2, 0, 2]])) == 0.0   # different ties


def test_a_network_with_a_silent_output_scores_zero():
    d = load_dataset("digits")
    model, kind = build_model("snn-digits", d.input_shape, d.n_classes)
    with torch.no_grad():                         # the output layer can never reach threshold
        model[9].weight.zero_()
        model[9].bias.zero_()
    x = d.x_test[:100]
    zeros = torch.zeros(100, dtype=torch.long)    # every label is the class argmax would pick
    assert evaluate(model, x, zeros, kind, 8, torch.device("cpu")) == 0.0
    acc, act = evaluate_outputs(model, x, d.y_test[:100], kind, 8, torch.device("cpu"))
    assert acc == 0.0 and act["silent_fraction"] == 1.0 and act["firing_rate"] == 0.0


def test_onnx_tied_logits_count_as_wrong(tmp_path):
    d = load_dataset("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
    x, y = d.x_test[:50], torch.zeros(50, dtype=torch.long)
    res = export("onnx", ExportJob(model.eval(), "ann", x, y), tmp_path)
    assert res.accuracy == 0.0                       # every sample a tie: wrong, not class 0
    assert res.parity["agreement"] == 1.0            # onnxruntime reproduces the same tie
    # a network that answers nothing is not a passed export, however faithful the copy
    assert not res.passed and res.parity["failure"] == ("constant output: the network gives "
                                                        "the same logits for all 50 samples")
