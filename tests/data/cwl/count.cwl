cwlVersion: v1.2
class: CommandLineTool
baseCommand: [wc, -l]
stdin: $(inputs.text.path)
inputs:
  text: File
stdout: count.txt
outputs:
  count:
    type: stdout
