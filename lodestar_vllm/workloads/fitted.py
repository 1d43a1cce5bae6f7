"""Fitted parameters of the trace look-alikes (lodestar_vllm.workloads.trace_like).

Written by ``python -m lodestar_vllm.workloads.fit --write`` from the public traces in ../shared/data/traces
(Mooncake FAST'25 conversation trace, Apache-2.0; Azure LLM inference traces 2023, CC-BY-4.0, Splitwise ISCA
2024). Do not edit by hand: refit. The fit's comparison of each trace with its look-alike:

trace vs look-alike (seed 0); cv30s: cv from counts in 30 s windows (Mooncake's bucketed timestamps
make its plain cv meaningless); prefix-hit: on 512-token blocks of the text, unlimited cache
mooncake-like
  trace      n= 12031 rate= 3.401/s cv= 3.03 cv30s= 1.57 prompt mean=   12035 p50=   6909 p99=  85400 output mean=   343 prefix-hit=0.373
  generated  n= 11969 rate= 3.385/s cv= 1.58 cv30s= 1.50 prompt mean=   11199 p50=   5915 p99=  89720 output mean=   340 prefix-hit=0.366
azure-code-like
  trace      n=  8819 rate= 2.566/s cv=13.15 cv30s=11.08 prompt mean=    2048 p50=   1469 p99=   7436 output mean=    28 prefix-hit=0.000
  generated  n=  8979 rate= 2.739/s cv=13.67 cv30s=10.67 prompt mean=    2045 p50=   1479 p99=   7436 output mean=    29 prefix-hit=0.000
azure-conv-like
  trace      n= 19366 rate= 5.530/s cv= 1.09 cv30s= 3.12 prompt mean=    1155 p50=   1020 p99=   4142 output mean=   211 prefix-hit=0.000
  generated  n= 19176 rate= 5.477/s cv= 1.15 cv30s= 3.18 prompt mean=    1139 p50=   1020 p99=   4140 output mean=   209 prefix-hit=0.000
"""

from __future__ import annotations

from lodestar_vllm.workloads.trace_like import TraceLikeParams

# ShareGPT turn lengths (cl100k tokens) at sampling.PERCENTILES, from data/traces/sharegpt/sharegpt_v3_prefix_turn_lengths.csv.gz
SHAREGPT_QUESTION_QUANTILES: tuple[float, ...] = (0.0, 1.0, 1.0, 3.0, 5.0, 7.0, 8.0, 9.0, 11.0, 12.0, 14.0, 16.0, 18.0, 20.0, 24.0, 28.0, 34.0, 43.0, 56.0, 79.0, 135.0, 334.0, 673.0, 1303.0, 1943.9, 3464.8, 161281.0)
SHAREGPT_ANSWER_QUANTILES: tuple[float, ...] = (0.0, 3.0, 13.0, 25.0, 55.0, 87.0, 116.0, 144.0, 171.0, 197.0, 221.0, 243.5, 266.0, 289.0, 311.0, 335.0, 363.0, 398.0, 442.0, 500.0, 580.0, 712.0, 767.0, 769.0, 771.0, 815.5, 22267.0)

TRACE_LIKE: dict[str, TraceLikeParams] = {
    "mooncake-like": TraceLikeParams(
        name="mooncake-like",
        source="Mooncake conversation trace",
        summary="lengths, rate, burstiness, common first block, conversation follow-ups",
        rate=3.4012,
        cv=1.569,
        duration=3537.0,
        prompt_quantiles=(891.0, 894.0, 895.0, 897.0, 905.0, 943.0, 1092.0, 1336.0, 1756.6, 2767.4, 3913.4, 4587.0, 5264.0, 6187.8, 7418.2, 8827.8, 10770.8, 13056.0, 15871.0, 19437.0, 25559.4, 38493.6, 58636.9, 89867.6, 111632.3, 121160.4, 126195.0),
        output_quantiles=(1.0, 3.0, 3.0, 10.0, 24.0, 46.0, 100.0, 156.5, 213.0, 256.0, 291.0, 322.5, 350.0, 375.0, 399.0, 423.0, 447.0, 472.0, 504.0, 543.0, 597.0, 698.0, 835.2, 1118.5, 1567.6, 2000.0, 2000.0),
        max_prompt=126195,
        shared_prefix=512,
        followup_fraction=0.3872,
        followup_age_quantiles=(0.0, 12.0, 21.0, 30.0, 42.0, 51.0, 60.0, 66.0, 75.0, 84.0, 96.0, 108.0, 123.0, 138.0, 162.0, 189.0, 222.0, 264.0, 318.0, 390.0, 483.0, 615.4, 906.1, 1476.9, 1908.0, 2639.4, 3030.0),
        followup_append_quantiles=(1.0, 1.0, 1.0, 1.0, 1.0, 48.5, 116.0, 187.0, 266.0, 322.0, 368.0, 410.0, 454.0, 495.0, 547.0, 608.0, 696.0, 899.8, 1494.6, 2997.3, 4621.3, 7418.8, 10683.2, 17220.6, 22493.0, 39837.8, 91918.0),
        rate_sigma=0.0,
        rate_window=30.0,
    ),
    "azure-code-like": TraceLikeParams(
        name="azure-code-like",
        source="Azure 2023 code trace",
        summary="lengths, rate, burstiness; no prefix sharing",
        rate=2.5664,
        cv=13.151,
        duration=3435.9,
        prompt_quantiles=(3.0, 17.0, 44.0, 75.0, 147.0, 232.0, 385.6, 578.0, 770.0, 938.6, 1075.0, 1261.1, 1469.0, 1690.0, 1909.0, 2163.7, 2433.0, 2744.5, 3192.4, 3920.2, 5187.6, 7303.3, 7435.0, 7436.0, 7436.0, 7437.0, 7437.0),
        output_quantiles=(6.0, 6.0, 6.0, 6.0, 7.0, 7.0, 8.0, 9.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 16.0, 18.0, 20.0, 24.0, 29.0, 39.0, 55.0, 90.0, 145.0, 251.5, 359.4, 825.3, 1899.0),
        max_prompt=7437,
        shared_prefix=0,
        followup_fraction=0.0,
        followup_age_quantiles=(),
        followup_append_quantiles=(),
        rate_sigma=0.0,
        rate_window=30.0,
    ),
    "azure-conv-like": TraceLikeParams(
        name="azure-conv-like",
        source="Azure 2023 conversation trace",
        summary="lengths, rate, burstiness; no prefix sharing",
        rate=5.5301,
        cv=1.094,
        duration=3501.7,
        prompt_quantiles=(2.0, 29.0, 120.0, 181.0, 207.0, 372.0, 387.0, 396.0, 403.0, 414.0, 703.0, 984.0, 1020.0, 1045.0, 1071.0, 1097.0, 1130.0, 1189.0, 1315.0, 1876.2, 2734.5, 4083.0, 4092.0, 4142.0, 4831.0, 6179.2, 14050.0),
        output_quantiles=(7.0, 16.0, 28.0, 41.0, 54.0, 67.0, 77.0, 85.0, 91.0, 96.0, 103.0, 113.0, 129.0, 151.0, 177.0, 217.0, 384.0, 395.0, 400.0, 411.0, 424.0, 451.0, 522.0, 601.0, 643.2, 954.0, 1000.0),
        max_prompt=14050,
        shared_prefix=0,
        followup_fraction=0.0,
        followup_age_quantiles=(),
        followup_append_quantiles=(),
        rate_sigma=0.224,
        rate_window=30.0,
    ),
}
