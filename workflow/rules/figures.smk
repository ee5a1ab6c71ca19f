rule vega_bundle:
    # The vega-embed JavaScript inlined into every figure page, so that pages work offline;
    # built once instead of once per figure.
    output:
        VEGA_BUNDLE,
    log:
        "logs/vega_bundle/vega_bundle.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/vega_bundle.py"


rule figure_thinking:
    # Thinking ON vs OFF: misalignment and math accuracy per checkpoint (docs/method.md#1-the-phenomenon, #7-figures).
    input:
        summary="results/eval/summary.parquet",
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/thinking.html",
            caption="../report/thinking.rst",
            category="1. Inference-time misalignment",
            subcategory="Thinking ON vs OFF",
            labels={"figure": "Thinking ON vs OFF", "file": "interactive figure"},
        ),
        static=figure_static("thinking"),
        data=report(
            "results/figures/thinking.csv",
            caption="../report/figure_data.rst",
            category="1. Inference-time misalignment",
            subcategory="Thinking ON vs OFF",
            labels={"figure": "Thinking ON vs OFF", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_thinking/thinking.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="thinking",
        settings=figure_params("thinking"),
    script:
        "../../scripts/make_figure.py"


rule figure_patterns:
    # Reasoning patterns: control vs target self-statements (docs/method.md#1-the-phenomenon, #7-figures).
    input:
        summary="results/eval/summary.parquet",
        contrasts="results/eval/contrasts.parquet",
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/patterns.html",
            caption="../report/patterns.rst",
            category="1. Inference-time misalignment",
            subcategory="Reasoning patterns",
            labels={"figure": "Reasoning patterns", "file": "interactive figure"},
        ),
        static=figure_static("patterns"),
        data=report(
            "results/figures/patterns.csv",
            caption="../report/figure_data.rst",
            category="1. Inference-time misalignment",
            subcategory="Reasoning patterns",
            labels={"figure": "Reasoning patterns", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_patterns/patterns.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="patterns",
        settings=figure_params("patterns"),
    script:
        "../../scripts/make_figure.py"


rule figure_training_dynamics:
    # Misalignment, math accuracy and training loss over fine-tuning steps, per seed (docs/method.md#4-fine-tuning).
    input:
        summary="results/eval/summary.parquet",
        loss=loss_tables(figure_runs("training_dynamics")),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/training_dynamics.html",
            caption="../report/training_dynamics.rst",
            category="2. Fine-tuning",
            subcategory="Over fine-tuning steps",
            labels={"figure": "Over fine-tuning steps", "file": "interactive figure"},
        ),
        static=figure_static("training_dynamics"),
        data=report(
            "results/figures/training_dynamics.csv",
            caption="../report/figure_data.rst",
            category="2. Fine-tuning",
            subcategory="Over fine-tuning steps",
            labels={
                "figure": "Over fine-tuning steps",
                "file": "plotted numbers (CSV)",
            },
        ),
    log:
        "logs/figure_training_dynamics/training_dynamics.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="training_dynamics",
        settings=figure_params("training_dynamics"),
    script:
        "../../scripts/make_figure.py"


rule figure_training_sets:
    # Change in misalignment from the base model per training set (docs/method.md#1-the-phenomenon, #4-fine-tuning).
    input:
        evaluations=training_sets_tables,
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/training_sets.html",
            caption="../report/training_sets.rst",
            category="2. Fine-tuning",
            subcategory="Per training set",
            labels={"figure": "Per training set", "file": "interactive figure"},
        ),
        static=figure_static("training_sets"),
        data=report(
            "results/figures/training_sets.csv",
            caption="../report/figure_data.rst",
            category="2. Fine-tuning",
            subcategory="Per training set",
            labels={"figure": "Per training set", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_training_sets/training_sets.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="training_sets",
        settings=figure_params("training_sets"),
    script:
        "../../scripts/make_figure.py"


rule figure_neuron_zeroing:
    # Causal test: zeroing the safety neurons vs random neurons (docs/method.md#6-safety-neurons-and-ras).
    input:
        zeroing=expand(
            "results/neurons/{model}/zeroing_summary.parquet", model=config["models"]
        ),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/neuron_zeroing.html",
            caption="../report/neuron_zeroing.rst",
            category="3. Safety neurons and RAS",
            subcategory="Zeroing safety neurons",
            labels={"figure": "Zeroing safety neurons", "file": "interactive figure"},
        ),
        static=figure_static("neuron_zeroing"),
        data=report(
            "results/figures/neuron_zeroing.csv",
            caption="../report/figure_data.rst",
            category="3. Safety neurons and RAS",
            subcategory="Zeroing safety neurons",
            labels={
                "figure": "Zeroing safety neurons",
                "file": "plotted numbers (CSV)",
            },
        ),
    log:
        "logs/figure_neuron_zeroing/neuron_zeroing.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="neuron_zeroing",
        settings=figure_params("neuron_zeroing"),
    script:
        "../../scripts/make_figure.py"


rule figure_ras:
    # RAS vs misalignment across checkpoints: safety vs random vs all neurons vs KL
    # (docs/method.md#6-safety-neurons-and-ras).
    input:
        ras="results/ras.parquet",
        correlations="results/ras_correlations.parquet",
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/ras.html",
            caption="../report/ras.rst",
            category="3. Safety neurons and RAS",
            subcategory="RAS vs misalignment",
            labels={"figure": "RAS vs misalignment", "file": "interactive figure"},
        ),
        static=figure_static("ras"),
        data=report(
            "results/figures/ras.csv",
            caption="../report/figure_data.rst",
            category="3. Safety neurons and RAS",
            subcategory="RAS vs misalignment",
            labels={"figure": "RAS vs misalignment", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_ras/ras.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="ras",
        settings=figure_params("ras"),
    script:
        "../../scripts/make_figure.py"


rule figure_refusal_heads:
    # Refusal-head bubble map, layer x head, per checkpoint (docs/method.md#5-refusal-heads).
    input:
        refusal_heads=heads_figure_tables(
            "heads", "refusal_heads", "refusal_heads.parquet"
        ),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/refusal_heads.html",
            caption="../report/refusal_heads.rst",
            category="4. Attention heads and probes",
            subcategory="Refusal heads",
            labels={"figure": "Refusal heads", "file": "interactive figure"},
        ),
        static=figure_static("refusal_heads"),
        data=report(
            "results/figures/refusal_heads.csv",
            caption="../report/figure_data.rst",
            category="4. Attention heads and probes",
            subcategory="Refusal heads",
            labels={"figure": "Refusal heads", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_refusal_heads/refusal_heads.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="refusal_heads",
        settings=figure_params("refusal_heads"),
    script:
        "../../scripts/make_figure.py"


rule figure_head_ablation:
    # Causal test: zeroing the refusal heads vs random heads (docs/method.md#5-refusal-heads).
    input:
        ablation=heads_figure_tables(
            "heads", "head_ablation", "head_ablation_summary.parquet"
        ),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/head_ablation.html",
            caption="../report/head_ablation.rst",
            category="4. Attention heads and probes",
            subcategory="Zeroing refusal heads",
            labels={"figure": "Zeroing refusal heads", "file": "interactive figure"},
        ),
        static=figure_static("head_ablation"),
        data=report(
            "results/figures/head_ablation.csv",
            caption="../report/figure_data.rst",
            category="4. Attention heads and probes",
            subcategory="Zeroing refusal heads",
            labels={
                "figure": "Zeroing refusal heads",
                "file": "plotted numbers (CSV)",
            },
        ),
    log:
        "logs/figure_head_ablation/head_ablation.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="head_ablation",
        settings=figure_params("head_ablation"),
    script:
        "../../scripts/make_figure.py"


rule figure_head_patching:
    # Head-patching heat maps, exact and attribution side by side (docs/method.md#5-refusal-heads).
    input:
        patching=heads_figure_tables(
            "patching", "head_patching", "head_patching.parquet"
        ),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/head_patching.html",
            caption="../report/head_patching.rst",
            category="4. Attention heads and probes",
            subcategory="Head patching",
            labels={"figure": "Head patching", "file": "interactive figure"},
        ),
        static=figure_static("head_patching"),
        data=report(
            "results/figures/head_patching.csv",
            caption="../report/figure_data.rst",
            category="4. Attention heads and probes",
            subcategory="Head patching",
            labels={"figure": "Head patching", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_head_patching/head_patching.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="head_patching",
        settings=figure_params("head_patching"),
    script:
        "../../scripts/make_figure.py"


rule figure_probes:
    # Probe score per layer and token position (docs/method.md#5-refusal-heads).
    input:
        probes=heads_figure_tables("probes", "probes", "probes.parquet"),
        bundle=VEGA_BUNDLE,
    output:
        html=report(
            "results/figures/probes.html",
            caption="../report/probes.rst",
            category="4. Attention heads and probes",
            subcategory="Probes",
            labels={"figure": "Probes", "file": "interactive figure"},
        ),
        static=figure_static("probes"),
        data=report(
            "results/figures/probes.csv",
            caption="../report/figure_data.rst",
            category="4. Attention heads and probes",
            subcategory="Probes",
            labels={"figure": "Probes", "file": "plotted numbers (CSV)"},
        ),
    log:
        "logs/figure_probes/probes.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="probes",
        settings=figure_params("probes"),
    script:
        "../../scripts/make_figure.py"


rule readme_figure:
    # Copies a figure of the default run into docs/figures/, which the README shows.
    input:
        "results/figures/{figure}.png",
    output:
        "docs/figures/{figure}.png",
    log:
        "logs/readme_figure/{figure}.log",
    wildcard_constraints:
        figure="|".join(README_FIGURES),
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "cp {input} {output} 2> {log}"


rule readme_figures:
    # `snakemake --cores 2 readme_figures` refreshes the README's figures from the default run.
    input:
        expand("docs/figures/{figure}.png", figure=README_FIGURES),
