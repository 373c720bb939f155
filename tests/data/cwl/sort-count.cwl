cwlVersion: v1.2
class: Workflow
label: Sort the lines of a text file, then count them
inputs:
  text: File
  reverse:
    type: boolean
    default: false
outputs:
  sorted:
    type: File
    outputSource: sort/sorted
  count:
    type: File
    outputSource: count_lines/count
steps:
  sort:
    run: sort.cwl
    in:
      text: text
      reverse: reverse
    out: [sorted]
  count_lines:
    run: count.cwl
    in:
      text: sort/sorted
    out: [count]
