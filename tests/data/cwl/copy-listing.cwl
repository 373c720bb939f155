cwlVersion: v1.2
class: CommandLineTool
doc: Lists a folder and copies its files.
baseCommand: [sh, -c, 'for f in "$0"/*; do cp "$f" "copy-$(basename "$f")"; done; ls "$0"']
inputs:
  folder:
    type: Directory
    inputBinding: {position: 1}
outputs:
  names:
    type: stdout
  copies:
    type: File[]
    outputBinding: {glob: "copy-*"}
stdout: names.txt
