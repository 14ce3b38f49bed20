"""axpo: AXPO vs GRPO for tool-using vision-language agents."""
