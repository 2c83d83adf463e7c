"""The world and its rules: the economy, the network, scenarios, and one room per market world."""
