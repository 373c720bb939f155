cwlVersion: v1.2
class: CommandLineTool
baseCommand: sort
inputs:
  reverse:
    type: boolean
    inputBinding: {prefix: -r, position: 1}
  text:
    type: File
    inputBinding: {position: 2}
stdout: sorted.txt
outputs:
  sorted:
    type: stdout
