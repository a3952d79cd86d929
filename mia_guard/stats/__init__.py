"""Statistics with their uncertainty: ROC/AUC and TPR@FPR intervals, advantage, means,
ε lower bounds and exposure. numpy/scipy only, never torch (docs/architecture.md)."""
