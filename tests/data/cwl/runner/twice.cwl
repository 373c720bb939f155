cwlVersion: v1.2
class: CommandLineTool
doc: Two outputs of one file.
baseCommand: [sh, -c, 'echo once > out.txt']
inputs: []
outputs:
  a:
    type: File
    outputBinding: {glob: out.txt}
  b:
    type: File
    outputBinding: {glob: out.txt}
