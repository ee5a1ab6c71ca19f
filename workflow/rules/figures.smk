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


# One rule per figure of the registry FIGURE_RULES (common.smk): figure_<name> draws
# results/figures/<name>.html, its static image and the plotted numbers (<name>.csv) from the
# figure's tables and its own block of `figures` (docs/method.md#7-figures).
for figure_name, figure_entry in FIGURE_RULES.items():

    rule:
        name:
            f"figure_{figure_name}"
        input:
            **figure_entry["tables"],
            bundle=VEGA_BUNDLE,
        output:
            html=figure_report(
                figure_name,
                f"results/figures/{figure_name}.html",
                "interactive figure",
            ),
            static=figure_static(figure_name),
            data=figure_report(
                figure_name,
                f"results/figures/{figure_name}.csv",
                "plotted numbers (CSV)",
                caption="../report/figure_data.rst",
            ),
        log:
            f"logs/figure_{figure_name}/{figure_name}.log",
        conda:
            "../../envs/figures.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            figure=figure_name,
            settings=figure_params(figure_name),
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
