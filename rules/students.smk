rule convert_student:
    output:
        directory("results/hf/{student}"),
    log:
        "results/logs/hf/{student}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        spec=student_params,
    script:
        "../workflow_scripts/convert_student.py"
