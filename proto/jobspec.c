/* job spec: written next */
