cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
inputs:
  greeting:
    type: string?
    default: Hello
    inputBinding: {position: 1}
  name:
    type: string
    inputBinding: {position: 2}
stdout: $(inputs.name).txt
outputs:
  greeting:
    type: stdout
