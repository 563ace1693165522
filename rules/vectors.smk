rule word_vectors:
    output:
        directory("results/vectors/{vectors}"),
    log:
        "results/logs/vectors/{vectors}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        spec=word_vectors_params,
    script:
        "../workflow_scripts/word_vectors.py"
