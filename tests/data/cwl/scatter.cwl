cwlVersion: v1.2
class: Workflow
label: Write one greeting file per name (a scatter)
requirements:
  ScatterFeatureRequirement: {}
inputs:
  names: string[]
  greeting:
    type: string?
outputs:
  greetings:
    type: File[]
    outputSource: greet/greeting
steps:
  greet:
    run: greet.cwl
    scatter: name
    in:
      name: names
      greeting: greeting
    out: [greeting]
