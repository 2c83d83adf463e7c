"""Bilateral trade along edges, the flows it leaves (intermediaries, layers), the merchant layer."""
