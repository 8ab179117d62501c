"""`localr1 eval`: DeepSeek-R1's rule-based reward (a boxed answer checked with math-verify,
and the think-block format), run on local models over problem sets."""
