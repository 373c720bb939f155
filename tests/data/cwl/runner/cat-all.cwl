cwlVersion: v1.2
class: CommandLineTool
doc: Concatenates its files (in their order) and lists the folder it is given.
requirements:
  InlineJavascriptRequirement: {}
baseCommand: [sh, -c]
arguments:
  - valueFrom: 'cat "$@" > joined.txt; ls -R "$0" > listing.txt'
  - $(inputs.folder.path)
  - valueFrom: $(inputs.files.map(function(f) { return f.path; }))
inputs:
  files: File[]
  folder: Directory
  anything: Any
  pair:
    type:
      type: record
      fields:
        left: string
        right: int
  matrix:
    type:
      type: array
      items: {type: array, items: int}
  ratio:
    type: float
    default: 0.00001
  big:
    type: double
    default: 1.23e5
  note:
    type: File
    default:
      class: File
      basename: note.txt
      contents: "a literal file\n"
outputs:
  joined:
    type: File
    outputBinding: {glob: joined.txt}
  listing:
    type: File
    outputBinding: {glob: listing.txt}
  echo:
    type: Any
    outputBinding:
      outputEval: $([inputs.anything, inputs.pair.left, inputs.matrix[1][0], inputs.ratio, inputs.big])
