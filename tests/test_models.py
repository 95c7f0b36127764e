import pytest
import torch

from dino_rnn.models import ARCHITECTURES, ScratchRNN, build_model, count_parameters

PUBLISHED = {"scratch": 10856, "rnn": 7707, "lstm": 25563, "gru": 19611}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_published_parameter_counts(arch):
    assert count_parameters(build_model(arch, 27, 64)) == PUBLISHED[arch]


def test_published_linear_scratch_cell_has_the_same_count():
    assert count_parameters(build_model("scratch", 27, 64, nonlinearity="none")) == 10856


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shapes_and_state_round_trip(arch):
    torch.manual_seed(0)
    m = build_model(arch, 27, 64).eval()
    x = torch.nn.functional.one_hot(torch.tensor([3, 1, 4, 1, 5]), 27).float()
    logits, state = m(x)
    assert logits.shape == (5, 27)
    # running the name in two pieces, carrying the state, gives the same logits
    a, s = m(x[:2])
    b, _ = m(x[2:], s)
    torch.testing.assert_close(torch.cat([a, b]), logits)


def test_scratch_nonlinearity_changes_the_function():
    torch.manual_seed(0)
    tanh = ScratchRNN(27, 64, "tanh").eval()
    linear = ScratchRNN(27, 64, "none").eval()
    linear.load_state_dict(tanh.state_dict())
    x = torch.nn.functional.one_hot(torch.tensor([1, 2, 3]), 27).float()
    assert not torch.allclose(tanh(x)[0], linear(x)[0])


def test_two_layers_and_bad_arguments():
    assert count_parameters(build_model("gru", 27, 64, num_layers=2)) == 19611 + 3 * (64 * 64 * 2 + 2 * 64)
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        build_model("transformer", 27)
    with pytest.raises(ValueError, match="num_layers must be 1"):
        build_model("scratch", 27, num_layers=2)
