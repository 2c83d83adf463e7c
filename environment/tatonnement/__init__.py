"""Tâtonnement: the fused kernel, decentralized and central dynamics, composite rules, verdicts."""
