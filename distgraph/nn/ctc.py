"""nn.CTCLoss: stores blank, reduction and zero_infinity and calls nn.functional.ctc_loss."""

from distgraph.nn import functional as F
from distgraph.nn.loss import _Loss


class CTCLoss(_Loss):
    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(reduction=reduction)
        self.blank, self.zero_infinity = blank, zero_infinity

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                          self.zero_infinity)  # fmt: skip
