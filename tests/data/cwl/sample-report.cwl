cwlVersion: v1.2
class: CommandLineTool
label: A sample report
requirements:
  SchemaDefRequirement:
    types:
      - name: Sample
        type: record
        fields:
          - name: reads
            type: File
          - name: label
            type: string
baseCommand: [sh, -c, 'echo "== $1 ($2, $3)"; cat "$0"']
arguments:
  - position: 2
    valueFrom: $(inputs.sample.label)
inputs:
  sample:
    type: Sample
    inputBinding:
      position: 1
      valueFrom: $(self.reads.path)
  choice:
    type: [int, string]
    inputBinding: {position: 3}
  extra:
    type: Any
    inputBinding:
      position: 4
      valueFrom: $(self.word)
  matrix:
    type: {type: array, items: {type: array, items: string}}
    default: [[a]]
outputs:
  report:
    type: stdout
  label:
    type: string
    outputBinding:
      outputEval: $(inputs.sample.label)
stdout: report.txt
