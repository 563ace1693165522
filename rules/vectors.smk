rule word_vectors:
    input:
        word_vectors_input,
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
