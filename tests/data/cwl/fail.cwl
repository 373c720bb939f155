cwlVersion: v1.2
class: CommandLineTool
label: Exit with a given status (a failing tool)
baseCommand: [sh, -c]
arguments: ["echo failing >&2; exit $0", $(inputs.status)]
inputs:
  status: int
outputs: []
