cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c, 'mkdir -p out/inner && echo top > out/top.txt && echo in > out/inner/deep.txt && echo x > "with#hash.txt"']
inputs: []
outputs:
  out:
    type: Directory
    outputBinding: {glob: out}
  hashed:
    type: File
    outputBinding: {glob: "with#hash.txt"}
