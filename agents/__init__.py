"""Who acts: utility families, the Mesa agent view, and the price-update rules."""
