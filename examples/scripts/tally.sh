#!/bin/sh
# The words of the file $1, lower case, less the stop words listed in stopwords.txt (a data
# file of the archive, beside this script in $FLOWDECK_CODE), counted into counts.txt as
# "COUNT WORD" lines, the most frequent first.
set -eu
tr -cs 'A-Za-z' '\n' < "$1" \
  | tr 'A-Z' 'a-z' \
  | grep -v '^$' \
  | grep -vxFf "$FLOWDECK_CODE/stopwords.txt" \
  | sort | uniq -c | sort -k1,1nr -k2 \
  | awk '{print $1, $2}' > counts.txt
